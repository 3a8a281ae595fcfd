"""The wire: RESP encoding and parsing, and the lean connections the guard reads through."""
