# Build: a static binary, no cgo, with the Go release go.mod names (deploy/deploy_test.go keeps them equal).
FROM golang:1.26.8 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/vmgateway ./cmd/vmgateway

# Run: nothing but the binary and CA certificates, as an unprivileged user.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/vmgateway /vmgateway
USER 65532:65532
EXPOSE 8431
ENTRYPOINT ["/vmgateway"]
