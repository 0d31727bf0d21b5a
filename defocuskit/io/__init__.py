"""Files in and out, below everything else: images, camera RAW + EXIF, model files, atomic writes, devices."""
