"""Hand-written versions of what torch provides: layers with explicit backward passes,
normalisation, convolution, attention, beam search and optimizers.

Each piece is checked against its torch counterpart in the tests; tasks run with
``task.impl=scratch`` train through these instead of autograd.
"""
