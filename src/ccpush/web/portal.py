"""The console as the platform's own: its name, logo and accent colour (white label), the
sites that may show it in a frame, and what a portal link's session shows of ccpush (nothing).

Portal links themselves are issued by the API (``ccpush.api.routes.portal_links``) and
opened by the console (``ccpush.web.routes.portal``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ccpush.settings import Settings
from ccpush.web.pages import security_headers


@dataclass(frozen=True, slots=True)
class Brand:
    """What a page shows of whose console it is."""

    name: str
    """The product's name; empty in a portal session when no name is set."""
    logo_url: str | None
    ccpush: bool
    """Show ccpush's mark and version (never in a portal session)."""
    theme: bool
    """Load the accent colour's stylesheet."""

    @property
    def title(self) -> str:
        """What follows a page's title: `` · ccpush console``, `` · Acme Voice``, or nothing."""
        if self.ccpush and self.name == "ccpush":
            return " · ccpush console"
        return f" · {self.name}" if self.name else ""


@dataclass(frozen=True, slots=True)
class Branding:
    """The console's name, logo and accent colour from the settings: ccpush's unless set."""

    product_name: str | None = None
    logo_url: str | None = None
    accent: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> Branding:
        return cls(
            settings.console_product_name, settings.console_logo_url, settings.console_accent
        )

    def headers(self, settings: Settings) -> dict[str, str]:
        """The pages' security headers: framed only by ``CCPUSH_CONSOLE_FRAME_ANCESTORS``,
        images from the logo's origin too."""
        images = ""
        if self.logo_url:
            parts = urlsplit(self.logo_url)
            images = f"{parts.scheme}://{parts.netloc}"
        return security_headers(settings.console_frame_ancestors, images)

    def shown(self, *, portal: bool) -> Brand:
        """The brand of a page: in a portal session, the platform's only."""
        name = self.product_name or ("" if portal else "ccpush")
        return Brand(name, self.logo_url, ccpush=not portal, theme=self.accent is not None)

    def stylesheet(self) -> str:
        """The accent colour as the stylesheet's variables (a link's, and its darker hover)."""
        if self.accent is None:
            return ""
        red, green, blue = (int(self.accent[i : i + 2], 16) for i in (1, 3, 5))
        dark = "#" + "".join(f"{int(part * 0.7):02x}" for part in (red, green, blue))
        accent = self.accent
        return f":root {{ --accent: {accent}; --accent-dark: {dark}; --info: {accent}; }}\n"
