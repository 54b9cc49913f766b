"""The JSON API: views, serializers, authentication, event streams, OpenAPI, errors and limits."""
