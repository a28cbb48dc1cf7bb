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
# An opening paragraph longer than the 60-word lead, as wire stories open with a long summary.
LONG_OPENING = (
    "The central bank raised its main interest rate by a quarter point on Tuesday, the third rise this "
    "year, and signalled that borrowing costs would stay high well into next spring as it fights prices "
    "that have climbed faster than wages for most of the past two years; the decision, taken by seven "
    "votes to two, surprised few traders but angered builders, retailers and the unions, who had asked "
    "for a pause until the winter figures on jobs, rents and household spending are published in February."
)
# A channel's sponsor block: the same lines under every one of its posts.
SPONSOR = [
    "If you'd like to help support the channel and help me buy more gadgets, I have a Patreon page: "
    "https://www.patreon.com/examplechannel",
    "We've also got a shop now! https://shop.examplechannel.test",
    "And if you're shopping on AliExpress or Amazon then if you click on these links I will get a "
    "little bit of affiliate money:",
    "AliExpress - https://s.click.aliexpress.test/e/_Ac05mF Amazon - https://www.amazon.test/?tag=example-20",
    "You can also join us on Discord here: https://discord.test/h2DDnDdjD2",
    "There's also the channel's newsletter here: https://examplechannel.substack.test/",
    "And don't forget about the maker newsletter - https://makernews.substack.test/",
]
CHANNEL_POST = [
    "It has been a while since I did an unbagging video, and apparently I have been ordering a lot of "
    "parts from overseas shops again.",
    "Drones, lasers, tiny microcontroller boards, odd sensors and a smart mug: the problem is that I "
    "genuinely cannot remember what I ordered, so let's open the bag and find out what is inside.",
    "A lot of this is random tech picked up for future projects; some of it is surprisingly useful and "
    "some of it is questionable. As usual I will power things up and poke at them with a multimeter.",
    "Several of these are definitely getting their own videos, especially the boards, the microphones "
    "and the laser setup, so if any of that sounds interesting, keep an eye out.",
]


def templated_post(number: int) -> tuple[str, list[str]]:
    """The title and text of a post of a feed whose items are one template around a name (a game
    database's "X was newly added and is rated Broken"): every post is within the threshold of all."""
    name = f"Title{number} Edition{number % 7}"
    text = (
        f"{name} was newly added to the compatibility list and is rated Broken: it does not boot past "
        "the loading screen on the current build with the default settings of the emulator. Reports "
        "from the community are welcome on the forum, together with the log and the version tested."
    )
    return f"{name} was newly added and is Broken", [text]
