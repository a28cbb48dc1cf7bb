"""The store's input and output: partition paths, staging, the commit protocol and lock, window writes.

Used by the batch and the streaming sink alike; each module is named for its concern.
"""
