"""Typed clients of the stack's services (tracker, metadata, serving admin). Each imports its
heavy library inside the functions that use it."""
