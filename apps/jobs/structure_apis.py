from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from apps.common.apis import PhonosApiView, error_responses
from apps.common.exceptions import InvalidInput
from apps.jobs.structures import structure_fetch, structure_upload_parse


@extend_schema_serializer(component_name="ParsedStructure")
class ParsedStructureSerializer(serializers.Serializer[Any]):
    class ChainSerializer(serializers.Serializer[Any]):
        id = serializers.CharField()
        sequence = serializers.CharField(help_text="One-letter codes of the chain's polymer")
        residues = serializers.IntegerField()

    class PredictInputSerializer(serializers.Serializer[Any]):
        model = serializers.CharField()
        sequence = serializers.CharField()

    format = serializers.CharField(help_text="pdb or mmcif")
    chains = ChainSerializer(many=True)
    models = serializers.IntegerField()
    predict_input = PredictInputSerializer(
        allow_null=True, help_text="A /v1/predict body for the first protein chain"
    )


class StructureParseApi(PhonosApiView):
    parser_classes = [MultiPartParser]

    @extend_schema_serializer(component_name="StructureUpload")
    class InputSerializer(serializers.Serializer[Any]):
        file = serializers.FileField(help_text="A .pdb, .cif or .mmcif file")

    @extend_schema(
        operation_id="parse_structure",
        description="Read an uploaded PDB or mmCIF file into its chains and sequences, with a "
        "ready /v1/predict body for its first protein chain. Nothing is stored.",
        request={"multipart/form-data": InputSerializer},
        responses={200: ParsedStructureSerializer, **error_responses(400, 413, 415)},
    )
    def post(self, request: Request) -> Response:
        upload = request.FILES.get("file")
        if upload is None:
            raise InvalidInput("file: a .pdb, .cif or .mmcif file upload is required")
        parsed = structure_upload_parse(filename=upload.name or "", content=upload.read())
        return Response(ParsedStructureSerializer(parsed.as_dict()).data)


class StructureFetchApi(PhonosApiView):
    @extend_schema(
        operation_id="fetch_structure",
        description="Download an entry from the RCSB PDB and read it like an upload.",
        parameters=[
            OpenApiParameter(
                "pdb_id",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                description="A 4-character PDB id",
                examples=[OpenApiExample("Crambin", value="1CRN")],
            )
        ],
        responses={200: ParsedStructureSerializer, **error_responses(400, 404, 502, 504)},
    )
    def get(self, request: Request, pdb_id: str) -> Response:
        return Response(ParsedStructureSerializer(structure_fetch(pdb_id=pdb_id).as_dict()).data)
