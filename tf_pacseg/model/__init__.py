"""The network in `keras.ops`: layers, atrous ResNets, PAC/ASPP heads, the segmenter, losses."""
