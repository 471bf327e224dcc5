"""TierClient implementations: how the controller reaches a tier's replicas.

- ``handle_client``: Ray Serve deployment handles (routing by request id for prefix-cache affinity);
- ``direct_client``: Serve picks a request's replica once, later segments go over gRPC to it;
- ``grpc_client``: fixed ``SegmentService`` endpoints outside Serve.
"""
