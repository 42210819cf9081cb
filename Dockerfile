# syntax=docker/dockerfile:1
# Build: docker build -t wxproxy .
# Run:   docker run -p 8080:8080 -p 9090:9090 -v $PWD/configs:/etc/wxproxy \
#          -e WXPROXY_CONFIG=/etc/wxproxy/wxproxy.yaml -e WX_MAIN_SECRET=... wxproxy
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/wxproxy ./cmd/wxproxy \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/wechatsim ./cmd/wechatsim

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/wxproxy /out/wechatsim /usr/local/bin/
COPY configs/ /etc/wxproxy/
ENV WXPROXY_CONFIG=/etc/wxproxy/wxproxy.yaml
USER nonroot:nonroot
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/wxproxy"]
CMD ["serve"]
