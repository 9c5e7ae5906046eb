"""Demonstration recording through topics into MCAP and LeRobotDataset v3.0, plus the vla-dataset tool."""
