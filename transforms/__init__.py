"""newsbeam's stages: one module per stage, pure record functions first, then a Beam composite."""
