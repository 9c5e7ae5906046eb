"""Demonstration recording through topics into MCAP and LeRobotDataset v3.0, plus the vla-dataset tool.

Modules (pure Python unless noted):
  lerobot        LeRobotDataset v3.0 writer and reader (LeRobotV3Writer, LeRobotV3Dataset): what training reads;
                 a subpackage (metadata, statistics, reader, video, writer) with one public import path
  bag            rosbag2 MCAP bags: BagWriter (raw CDR), BagReader (also truncated bags), recover_bag
  sampler        FrameSampler: fixed-rate frames from asynchronous streams, tolerance rules, EpisodeReport
  episode        topic maps, decoding (through vla_perception.codec), MessageFeed (the message -> sampler rules
                 the live recorder and every conversion share), convert_bag (bag -> episode)
  collector      Collector: the recorder behind the node (episodes, verdicts, crash recovery)
  collector_node rclpy wiring: services ~/start, ~/stop, ~/discard; raw subscriptions; /diagnostics
  cli            vla-dataset: info, validate, stats, convert, replay, export-video, plot
"""
