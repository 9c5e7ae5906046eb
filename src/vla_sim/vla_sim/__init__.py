"""Embedded PyBullet Franka Panda tabletop simulator with language tasks, scripted experts, a ROS bridge and a Gymnasium env."""
