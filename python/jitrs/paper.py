"""The paper's settings (official code, 256 px), named once: the flow, the CLI defaults and the samplers use these.

Kept free of torch so the command line can show its defaults (`--help`) and refuse bad input without it."""

P_MEAN, P_STD = -0.8, 0.8  # t = sigmoid(N(P_MEAN, P_STD²)): biased towards noise
T_EPS = 0.05  # the clamp of 1 − t wherever it divides
LABEL_DROP = 0.1  # probability of the null class in training (classifier-free guidance)
CFG_INTERVAL = (0.1, 1.0)  # guidance applies on this interval of t only
SAMPLE_STEPS = 50  # Heun steps (99 network evaluations)
