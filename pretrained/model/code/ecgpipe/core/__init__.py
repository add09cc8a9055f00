"""The bottom layer: errors, units, file output and devices. Imports nothing of ecgpipe's."""
