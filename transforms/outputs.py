"""What an article stage returns: `ArticleOutputs`, the articles it made and its dead letters.

Every fallible stage of `ProcessArticles` (normalize, identify, detect, enrich) is one DoFn that
yields articles and tags its failures as dead letters; `apply_with_dead_letters` is the one way
such a DoFn is applied, so each stage's composite is one line and all return the same shape.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.pvalue import PCollection

from transforms.schema import DEAD_LETTERS


class ArticleOutputs(NamedTuple):
    articles: PCollection[Any]
    dead_letters: PCollection[Any]


def apply_with_dead_letters(inputs: PCollection[Any], label: str, fn: beam.DoFn) -> ArticleOutputs:
    """`fn` applied as step `label`: its main output are the articles, its `dead_letters` tag the failures."""
    results = inputs | label >> beam.ParDo(fn).with_outputs(DEAD_LETTERS, main="articles")
    return ArticleOutputs(results.articles, results[DEAD_LETTERS])
