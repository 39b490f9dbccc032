"""Weight-shared NAS over a trained supernet run: subnet search under a budget and ranking
diagnostics (the supernet and the training-free proxies against standalone training)."""
