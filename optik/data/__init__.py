"""Data layer: safe image decoding (`image`), datasets (`dataset`), built-in synthetic data
(`synthetic`), `data=` resolution (`sources`), file formats (`formats/`) and transform presets
(`transforms`)."""
