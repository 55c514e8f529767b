"""facedistill compression side: prune, quantize, export, profile, report, and the `compress` CLI."""
