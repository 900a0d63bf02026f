"""The numbers: FID statistics and the feature networks (`fid`), reconstruction metrics (`reconstruction`), latent
alignment (`alignment`), the linear probe (`linear_probe`) and the CLIP score (`clip_score`)."""
