"""Image bytes to model input: safe decoding with limits (decode), the official Pillow transform
(transform) and its crop geometry (geometry), the JPEG header reader and the Pillow-exact tensor
re-encode (jpeg_header, jpeg_tensor), same-shape batching (batching), and the batched
preprocessor that runs either path (batched)."""
