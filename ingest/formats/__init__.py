"""Media formats as pure functions over bytes: AMF0, FLV, ADTS. No I/O, no threads,
no protocol: the RTMP server, the decoder and the tests all use them."""
