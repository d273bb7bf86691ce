"""Hyper-parameters read by train.py. Focused file: the researcher edits these lines."""

LR = 0.01  # Adam learning rate
HIDDEN = 16  # width of each hidden layer
LAYERS = 1  # number of hidden layers
STEPS = 600  # full-batch optimizer steps
LOG_EVERY = 10  # print one `step=... loss=...` line every LOG_EVERY steps
