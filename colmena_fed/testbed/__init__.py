"""A local stand-in for the Globus Compute cloud: develop and test `globus` sites offline.

``colmena-fed testbed up`` (or `colmena_fed.testbed.bed.Testbed` from Python) runs a private
RabbitMQ broker, a small web service that speaks Globus Compute's API, and real endpoint
daemons; the SDK's Executor talks to it as it would to the cloud. Its extra dependencies come
with ``pip install 'colmena-fed[testbed]'``.
"""
