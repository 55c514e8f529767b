"""facedistill students: conv/FC architectures, exact lookahead accounting, hybrid distillation, streaming."""
