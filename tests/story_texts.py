"""Texts shared by the story tests: a wire story, an unrelated one, and a boilerplate footer."""

from __future__ import annotations

from datetime import UTC, datetime

WIRE = [
    "The central bank raised its main interest rate by a quarter point on Tuesday, the third rise this year.",
    "Officials said inflation had stayed above the target for eleven months and that wages kept climbing.",
    "Markets had expected the move; the currency barely changed after the announcement in the capital.",
    "Economists warned that mortgage holders would feel the rise within weeks as lenders pass it on.",
    "The bank's governor told reporters that further rises were possible if prices did not ease soon.",
    "Opposition politicians called the decision a blow to families already struggling with rents.",
]
OTHER = [
    "A new footbridge over the river opened on Saturday after two years of building work downtown.",
    "Cyclists and walkers crowded the span, which links the old harbour with the railway station.",
    "The city council said the bridge cost less than planned and came in three months early.",
    "Local shops on both banks hope the extra visitors will lift trade through the winter season.",
]
FOOTER = (
    "© 2026 Metro Wire. All rights reserved. Follow us for the latest news and sign up to our newsletter."
)
AT = datetime(2026, 11, 2, 8, tzinfo=UTC)
