from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from long_time_task.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for a user. The token is printed once, alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--expires-in", type=int, metavar="DAYS", help="expire after DAYS days")
        parser.add_argument("--name", default="", help="a label to recognise the token by")

    def handle(self, *args: Any, username: str, expires_in: int | None, name: str, **options: Any) -> None:
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            raise CommandError(f"No user named {username!r}") from None
        if expires_in is not None and expires_in <= 0:
            raise CommandError("--expires-in must be a positive number of days")
        expires_at = timezone.now() + timedelta(days=expires_in) if expires_in else None
        token, raw = ApiToken.issue(user, name=name, expires_at=expires_at)
        until = f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
        self.stdout.write(f"Token {token.key_prefix}… for {username}{until}. It is shown only now:")
        self.stdout.write(raw)
