"""Speed benchmarks against a PyTorch CPU baseline measured in the same run."""
