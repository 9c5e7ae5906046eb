"""Camera ingest, the one ROS Image to numpy codec, model-input preprocessing and frame freshness."""
