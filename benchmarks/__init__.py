"""newsbeam's benchmark suite (`make bench`): speed, memory and accuracy against a baseline."""

import pipeline  # noqa: F401  (its warning filter: Google's deprecation notices stay out of the logs)
