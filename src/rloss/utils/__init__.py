"""Utilities shared by every layer: atomic writes, the allocator setting, argument checks, error reporting."""
