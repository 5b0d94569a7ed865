"""Language modelling: the decoder-only model, TBPTT data, training, scoring and sampling."""
