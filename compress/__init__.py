"""Compression operators: models, data, prune, quantize, distill, fine-tune, measure, export."""
