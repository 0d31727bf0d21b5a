"""Running a trained model: load_model, restore (whole image or tiles), CoC sources, deblurring files."""
