"""Wyoming protocol layer: one event handler per connection, `info` building, zeroconf."""
