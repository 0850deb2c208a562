"""Pure translations between client protocols and the chat pivot: no I/O."""
