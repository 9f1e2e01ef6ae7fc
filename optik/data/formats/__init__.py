"""Readers for on-disk and library dataset formats; each validates while it reads and raises
`DatasetError` naming the file, row or index at fault."""
