"""newsbeam's composition layer: CLI, options, config loading, pipeline building, runner choice."""

import warnings

# Google's client libraries, which Beam imports when the `gcp` extra is installed, print deprecation
# notices (grpcio, Python versions) on every start: not the user's concern, and they would come
# before newsbeam's own one-line errors.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
