"""Videos cut from lives: their records (`store`), the cuts' runner (`cuts`), their
owner (`service.Videos`), who may read them (`visibility`), the private ones' playback
tokens (`tokens`) and playlists (`playlists`), and the handlers (`views`)."""
