"""newsbeam's composition layer: CLI, options, config loading, pipeline building, runner choice."""
