"""mmengine config files (read with ``Config.fromfile``, never imported)."""
