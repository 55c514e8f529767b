"""facedistill teacher side: audio I/O, the speech corpus, ground truth, the teacher and pseudo-labels."""
