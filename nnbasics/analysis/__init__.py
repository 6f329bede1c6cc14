"""Analyses of the lecture's ideas: theory checked against measurement (momentum, backprop, ...)."""
