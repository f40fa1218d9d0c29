"""
TLS on the links between the nodes of a cluster (C{--cluster-tls} and
C{--cluster-ca}): this node's certificate and key, and the authorities that
sign the certificates of the nodes.

A link over TLS is mutual: the node that dials checks that the listener's
certificate is signed by one of the authorities and valid for the host of
the address the listener advertises in the store; the listener asks the
dialling node for its certificate, and checks that one of the authorities
signed it. The handshake of L{tunnel.cluster.handshake} then runs inside
TLS, as it runs on a plain link: TLS keeps what crosses the link from being
read or changed on the way, the cluster secret still decides who may link.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

import attrs
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.hazmat import DNS_ID, IPAddress_ID, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnel.cluster.settings import readCertificates

_PEM_PRIVATE_KEY = re.compile(
    rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.DOTALL
)


@attrs.frozen(slots=False)
class LinkTLS:
    """
    What a node needs to speak TLS on its links.

    @ivar certificate: this node's certificate, with its private key; it
        is presented both when the node listens and when it dials.
    @ivar chain: the intermediate certificates to present after it, if
        an intermediate authority signed it.
    @ivar authorities: the certificates of the authorities that sign the
        nodes' certificates: the other nodes' certificates are checked
        against them.
    """

    certificate: PrivateCertificate = attrs.field(repr=False)
    authorities: tuple[Certificate, ...] = attrs.field(repr=False)
    chain: tuple[Certificate, ...] = attrs.field(default=(), repr=False)

    @functools.cached_property
    def serverOptions(self) -> CertificateOptions:
        """
        The TLS options of the listener: this node's certificate, and a
        certificate required of the dialling node, signed by one of the
        authorities.
        """
        return CertificateOptions(
            privateKey=self.certificate.privateKey.original,
            certificate=self.certificate.original,
            extraCertChain=[certificate.original for certificate in self.chain],
            verify=True,
            caCerts=[authority.original for authority in self.authorities],
            requireCertificate=True,
        )

    def clientOptions(self, host: str) -> object:
        """
        The TLS options of a link dialled to C{host} (a name or an IP
        address): the listener's certificate must be signed by one of the
        authorities and valid for C{host}; this node presents its own.
        """
        return optionsForClientTLS(
            host,
            trustRootFromCertificates(list(self.authorities)),
            self.certificate,
            extraCertificateOptions={
                "extraCertChain": [certificate.original for certificate in self.chain]
            },
        )

    def validFor(self, host: str) -> bool:
        """
        Whether this node's certificate is valid for C{host} (a name or an
        IP address), as the nodes that dial it check.
        """
        identity = (
            IPAddress_ID(host) if isIPAddress(host) or isIPv6Address(host) else DNS_ID(host)
        )
        try:
            verify_service_identity(extract_patterns(self.certificate.original), [identity], [])
        except (VerificationError, CertificateError):
            return False
        return True

    def listening(self, factory: Factory, clock: IReactorTime) -> Factory:
        """
        C{factory}, its connections wrapped in TLS as a listener's.

        @param clock: what schedules the TLS layer's writes.
        """
        return TLSMemoryBIOFactory(self.serverOptions, False, factory, clock)

    def dialling(
        self, host: str, endpoint: IStreamClientEndpoint, clock: IReactorTime
    ) -> IStreamClientEndpoint:
        """
        C{endpoint}, its connections to C{host} wrapped in TLS as a
        dialler's.

        @param clock: what schedules the TLS layer's writes.
        """
        return _TLSClientEndpoint(endpoint, self.clientOptions(host), clock)


@implementer(IStreamClientEndpoint)
@attrs.frozen
class _TLSClientEndpoint:
    """
    Connects over C{endpoint}, wrapping the connection in TLS, as
    C{wrapClientTLS} does, with a clock of the caller's for the TLS layer.
    """

    endpoint: IStreamClientEndpoint
    options: object
    clock: IReactorTime

    def connect(self, factory: Factory) -> Deferred[Protocol]:
        """Connect, and fire with C{factory}'s protocol, under TLS."""
        wrapped = TLSMemoryBIOFactory(self.options, True, factory, self.clock)
        return self.endpoint.connect(wrapped).addCallback(lambda tls: tls.wrappedProtocol)


def readLinkTLS(certificatePath: str, authorities: Sequence[Certificate]) -> LinkTLS:
    """
    Read this node's certificate and private key (one PEM file, the
    certificate first of its certificates, any intermediates after it),
    and check that they go together and with C{authorities}: the key is
    the certificate's, and one of the authorities signed it.

    @param authorities: the certificates of the authorities that sign the
        nodes' certificates (see L{readCertificates}).
    @raise ValueError: saying what is wrong, and why; never showing a
        key.
    """
    certificates = readCertificates(certificatePath)
    try:
        with open(certificatePath, "rb") as pem:
            found = _PEM_PRIVATE_KEY.search(pem.read())
    except OSError as e:
        raise ValueError(f"cannot read {certificatePath}: {e.strerror}") from None
    if found is None:
        raise ValueError(f"{certificatePath} holds no PEM private key (it needs the key "
                         "and the certificate)")
    try:
        # Never prompts for a passphrase, as OpenSSL's own reader would.
        key = load_pem_private_key(found.group(0), password=None)
    except TypeError:
        raise ValueError(f"the private key of {certificatePath} is encrypted: give it "
                         "unencrypted, in a file only the server can read") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{certificatePath} holds a malformed private key") from None
    try:
        certificate = PrivateCertificate.fromCertificateAndKeyPair(
            certificates[0], KeyPair(crypto.PKey.from_cryptography_key(key))
        )
    except Exception:
        raise ValueError(f"the private key of {certificatePath} is not that of its "
                         "certificate (the first of the file)") from None
    tls = LinkTLS(certificate, tuple(authorities), tuple(certificates[1:]))
    problem = _unsigned(tls)
    if problem is not None:
        raise ValueError(f"the certificate of {certificatePath} does not check against the "
                         f"authorities of --cluster-ca: {problem}")
    return tls


def _unsigned(tls: LinkTLS) -> str | None:
    """
    L{None} if an authority of C{tls} signed its certificate (through its
    chain), and it is valid now; otherwise why not, in OpenSSL's words.
    """
    store = crypto.X509Store()
    for authority in tls.authorities:
        store.add_cert(authority.original)
    context = crypto.X509StoreContext(
        store, tls.certificate.original, [certificate.original for certificate in tls.chain]
    )
    try:
        context.verify_certificate()
    except crypto.X509StoreContextError as e:
        return str(e)
    return None


#: What the other side's TLS said, in OpenSSL's words, and what it means
#: for a link, in order.
_TLS_PROBLEMS = (
    (("unknown ca", "bad certificate", "certificate unknown"),
     "the other node does not trust this node's certificate (is it signed by an authority "
     "of the other node's --cluster-ca?)"),
    (("certificate verify failed",),
     "the other node's certificate is not signed by an authority of --cluster-ca, or is "
     "not valid now"),
    (("peer did not return a certificate", "certificate required"),
     "the dialling node presented no certificate"),
    (("wrong version number", "http request", "packet length too long", "record layer failure",
      "unexpected eof", "unexpected message"),
     "the other side does not speak TLS (is it a node without --cluster-tls?)"),
)


def tlsProblem(reason: Failure) -> str | None:
    """
    What went wrong with the TLS of a link whose connection was lost for
    C{reason}, in words that say what to check; L{None} if it was no TLS
    error.
    """
    if reason.check(VerificationError):
        return "the other node's certificate is not valid for the host of its address"
    if not reason.check(SSL.Error):
        return None
    said = reason.getErrorMessage()
    for phrases, meaning in _TLS_PROBLEMS:
        if any(phrase in said.lower() for phrase in phrases):
            return f"{meaning}: {said}"
    return said
