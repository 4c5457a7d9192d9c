"""Training of IQA models over batch-size x seed x LR-rule sweeps."""
