"""Cluster side: the loopback mini-cluster, the TensorFlowOnSpark adapter, the parameter server."""
