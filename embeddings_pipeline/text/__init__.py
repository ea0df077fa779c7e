"""Text processing: markdown/text -> typed blocks -> token-bounded chunks; hashing; tokenizers."""
