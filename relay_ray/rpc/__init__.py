"""Protobuf conversion and gRPC servicers (generated code lives in ``relay_ray.v1``)."""
