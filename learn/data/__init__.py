"""Data layer: formats, converters, item text, the LMDB item store and training samples."""
