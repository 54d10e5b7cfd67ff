"""Command line for engineers: thin wrappers over the packages (replay, simulate, export, bench)."""

__all__: list[str] = []
