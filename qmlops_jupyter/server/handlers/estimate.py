"""``POST /qmlops/api/v1/estimate``: what a job would cost, as ``qmlops estimate --json``.
The job's checks run (circuit text, qubits, shots); nothing is written."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import API, QmlopsHandler


class EstimateHandler(QmlopsHandler):
    auth_resource = "qmlops:budget"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        from .models import EstimateRequest

        request = self.body(EstimateRequest)
        estimate = await self.run(
            self.client.estimate, request.circuits, backend=request.backend, shots=request.shots
        )
        self.reply(estimate.model_dump(mode="json"))


ROUTES = [(rf"/{API}/estimate", EstimateHandler)]
