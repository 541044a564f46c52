"""What a model makes of the sequences themselves: one vector per sequence (`omics embed`) and zero-shot
variant scores (`omics variant-effect`), on any omics model folder."""
