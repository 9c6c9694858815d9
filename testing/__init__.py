"""Helpers for the tests (and the benchmarks that need the same fixtures); no product module imports them.

checkpoints  random PaliGemma checkpoints written by transformers, the reference (needs the test extra)
vae          a random VQ-VAE in big_vision's vae-oid.npz layout
coco         random COCO ground truth and detections that reach COCOeval's corner cases
faults       model replicas that fail on purpose, handed to the label job by tests
s3           an S3-compatible server (moto) on 127.0.0.1 for object-storage tests
ray_cluster  `ray start` heads and workers on this machine, ended by their process ids
"""
