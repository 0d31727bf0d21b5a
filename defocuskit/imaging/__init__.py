"""Image formation and its classical inverses: thin-lens optics, the K_c defocus operator, Wiener deconvolution,
optical flow. Pure functions of arrays and tensors."""
