"""What a request means and how a label set moves z: the one implementation the server and the evaluation share.

``specs`` (request syntax and resolution), ``modes`` (prior / actor / optimize, and a request's draw), ``edits``
(identity-preserving edits), ``labelset`` (a loaded label-set version), ``backbone`` (the frozen VAE: decode /
encode), ``rules`` (zero-shot labels from images), ``images`` (PNG and grids), ``runtime`` (device, autocast, logs).
"""
